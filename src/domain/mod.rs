//! Values the relay works with: recipients and their destinations, templates and SMS segments.

pub mod clock;
pub mod destination;
pub mod recipient;
pub mod reference;
pub mod segments;
pub mod template;

pub use clock::DbClock;
pub use recipient::Recipient;
pub use segments::{Encoding, Segments};
pub use template::{RenderError, parse_params, render};
