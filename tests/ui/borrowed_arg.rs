//! A borrowed argument: arguments arrive by value.
#[geerpc::service]
pub trait Echo {
    fn echo(&self, args: &str) -> Result<String, String>;
}

fn main() {}
