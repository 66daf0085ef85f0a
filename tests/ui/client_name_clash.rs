//! Methods whose generated client names clash: `go_sum` is `sum`'s pending
//! call, and `new` is the client's constructor.
#[geerpc::service]
pub trait Arith {
    fn sum(&self, args: i64) -> Result<i64, String>;
    fn go_sum(&self, args: i64) -> Result<i64, String>;
    fn new(&self, args: i64) -> Result<i64, String>;
}

fn main() {}
