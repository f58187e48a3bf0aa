//! Integration tests: the real `token-vendor` binary against token servers on 127.0.0.1.

mod helpers;

mod admin_flood;
mod check;
mod daemon;
mod once;
mod reliability;
