//! A method without `&self`.
#[geerpc::service]
pub trait Arith {
    fn sum(args: i64) -> Result<i64, String>;
}

fn main() {}
