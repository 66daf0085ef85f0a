//! `&mut self`: the server calls a method from many threads at once.
#[geerpc::service]
pub trait Arith {
    fn sum(&mut self, args: i64) -> Result<i64, String>;
}

fn main() {}
