//! `impl Trait` in argument position is a generic too.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, args: impl serde::Serialize) -> Result<i64, String>;
}

fn main() {}
