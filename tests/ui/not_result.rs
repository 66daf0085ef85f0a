//! A return that is not a `Result`.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, args: (i64, i64)) -> i64;
}

fn main() {}
