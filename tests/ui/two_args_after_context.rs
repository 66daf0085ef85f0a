//! More than one argument besides the context.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, ctx: &geerpc::Context, a: i64, b: i64) -> Result<i64, String>;
}

fn main() {}
