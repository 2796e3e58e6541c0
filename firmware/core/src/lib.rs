//! The room's behaviour as a sans-IO state machine: inputs in, outputs out, time is an input.
