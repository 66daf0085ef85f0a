//! More than one argument.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, a: i64, b: i64) -> Result<i64, String>;
}

fn main() {}
