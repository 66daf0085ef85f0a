//! A generic method.
#[geerpc::service]
pub trait Arith {
    fn sum<T: serde::de::DeserializeOwned>(&self, args: T) -> Result<i64, String>;
}

fn main() {}
