//! `reservoir replay`: to be written.
