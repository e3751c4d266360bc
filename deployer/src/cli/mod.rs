//! The `deployer` binary's own modules: [`args`] (the command line), [`commands`] (what
//! each command does with the library and prints), [`render`] (the text it prints).

pub mod args;
pub mod commands;
pub mod render;
