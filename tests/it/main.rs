//! Integration tests: the real `token-vendor` binary against token servers on 127.0.0.1.

mod helpers;
mod keys_auth;

mod admin_flood;
mod auth_blocks;
mod check;
mod consumers;
mod daemon;
mod demo;
mod discovery;
mod exchange;
mod exchange_server;
mod harden_reads;
mod hostile_config;
mod hostile_inputs;
mod hostile_output;
mod hostile_state;
mod notify;
mod once;
mod operator;
mod ops_check;
mod ops_metrics;
mod ops_server_messages;
mod reliability;
