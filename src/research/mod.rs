//! The research harness, apart from the core API: the paper's synthetic rule-learning task
//! and the metrics that compare learned rules with true ones ([`synthetic`]).

pub mod synthetic;
