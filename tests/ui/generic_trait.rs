//! A generic trait.
#[geerpc::service]
pub trait Arith<T> {
    fn sum(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
