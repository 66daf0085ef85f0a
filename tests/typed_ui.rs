//! `#[geerpc::service]`'s misuses are compile errors pointing at the
//! user's code, with the messages checked in under tests/ui/ (one file
//! per misuse of issue 20: no `&self`, more than one argument besides the
//! context, a return that is not a `Result`, generics, `async fn`, a
//! duplicate wire name, and a few more).
//!
//! The messages are the macro's own (`compile_error!` spans), so they do
//! not change with the compiler; trybuild normalises paths. After changing
//! a message: `TRYBUILD=overwrite cargo test --all-features --test typed_ui`,
//! then read the diff.

#[test]
fn misuse_is_a_compile_error_on_the_users_code() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
