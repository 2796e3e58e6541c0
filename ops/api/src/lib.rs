//! Wire types shared by the room daemon and the district server.
