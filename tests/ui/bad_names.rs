//! Wire names the server would refuse, and an option that does not exist.
#[geerpc::service(name = "Ari.th")]
pub trait Arith {
    fn sum(&self, args: i64) -> Result<i64, String>;
}

#[geerpc::service]
pub trait Calc {
    #[geerpc(name = "")]
    fn sum(&self, args: i64) -> Result<i64, String>;
}

#[geerpc::service(version = 2)]
pub trait Other {
    fn sum(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
