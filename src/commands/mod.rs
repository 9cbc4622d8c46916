//! The subcommands besides `serve`, each in the library so its whole path is tested.

mod check;
mod check_coder;
mod check_listen;
mod check_routes;
mod preview;
mod send_test;

pub use check::check;
pub use preview::preview;
pub use send_test::send_test;
