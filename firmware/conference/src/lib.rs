//! Conference connectors: the signalling trait and its Janus VideoRoom implementation.
