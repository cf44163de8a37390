//! The project's own local stack ([`local`]), the cost report ([`cost`]) and the stack tests'
//! parts: reading `template.yaml` ([`template`]), creating its resources in moto
//! ([`resources`]), and a Lambda Runtime API emulator that runs the functions' real binaries
//! ([`runtime`]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test infrastructure: a failed set-up is a failed test"
)]

pub mod cost;
pub mod local;
pub mod pipeline;
pub mod resources;
pub mod runtime;
pub mod template;

pub use template::{
    PSEUDO_PARAMETERS, Resolver, Template, chosen, intrinsic, references, scalar, sub_variables,
};
