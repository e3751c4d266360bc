//! The prediction API on hyper: `POST /predict` and the endpoints operators expect.
//!
//! * [`api`]: request parsing (every error names its field) and response shapes;
//! * [`app`]: state, routing and handlers (transport-agnostic, testable in-process);
//! * [`source`]: the model from a local artifact root or S3;
//! * [`metrics`]: Prometheus metrics;
//! * [`predlog`]: prediction logging off the request path;
//! * [`serve`]: the listener, signals and graceful shutdown;
//! * [`https`]: HTTPS with an ACME certificate for the public IP (`--tls acme`).
//!
//! The binary (`src/main.rs`) only parses flags and environment and calls [`serve::run`].

pub mod api;
pub mod app;
pub mod https;
pub mod metrics;
pub mod predlog;
pub mod serve;
pub mod source;
