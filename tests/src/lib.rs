//! The project's own local stack and its tests: reading `template.yaml` ([`template`]), and a
//! Lambda Runtime API emulator that runs the functions' real binaries ([`runtime`]).

pub mod resources;
pub mod runtime;
pub mod template;

pub use template::{
    PSEUDO_PARAMETERS, Resolver, Template, intrinsic, references, scalar, sub_variables,
};
