//! The Transformer family, one test binary: the leaf layers (`layers`), attention, the
//! feed-forward and pre-norm blocks and the key/value cache (`attention`), and the language
//! model (`lm`). (One binary instead of three keeps the test build short.)

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod layers;
mod lm;
