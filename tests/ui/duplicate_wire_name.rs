//! Two methods with one wire name: `sum` and `Sum` are both `Sum`.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, args: i64) -> Result<i64, String>;
    #[allow(non_snake_case)]
    fn Sum(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
