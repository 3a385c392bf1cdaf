//! Workspace-level test support for raftd.
