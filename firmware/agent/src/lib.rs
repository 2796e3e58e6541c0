//! The device's agent for the district server: enrolment, config, schedule cache, heartbeat.
