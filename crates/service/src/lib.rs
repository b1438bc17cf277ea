//! `orch serve`: one process for the whole portfolio (in progress).
