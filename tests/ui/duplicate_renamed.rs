//! A renamed method that takes another's wire name.
#[geerpc::service]
pub trait Arith {
    fn add(&self, args: i64) -> Result<i64, String>;
    #[geerpc(name = "Add")]
    fn plus(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
