//! No return type at all.
#[geerpc::service]
pub trait Arith {
    fn reset(&self, args: ());
}

fn main() {}
