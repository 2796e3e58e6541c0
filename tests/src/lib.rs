//! End-to-end test harness: Janus in a network namespace, daemons on sim boards.
