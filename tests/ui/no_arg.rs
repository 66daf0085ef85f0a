//! No argument at all (`()` is how to say none).
#[geerpc::service]
pub trait Arith {
    fn now(&self) -> Result<u64, String>;
}

fn main() {}
