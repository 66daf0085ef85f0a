//! The attribute goes on a trait.
#[geerpc::service]
pub struct Arith;

fn main() {}
