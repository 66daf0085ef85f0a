//! `async fn`: geerpc is synchronous.
#[geerpc::service]
pub trait Arith {
    async fn sum(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
