//! The expansion checked as text: Go's wire names, doc comments carried
//! to the client, and what goes wrong naming the method. (The generated
//! code is compiled and run by the geerpc crate's tests/typed.rs, and its
//! errors by tests/typed_ui.rs.)

use quote::quote;

use crate::expand;
use crate::model::pascal_case;

fn expanded(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    expand(attr, item).to_string()
}

#[test]
fn wire_names_are_go_pascal_case() {
    assert_eq!(pascal_case("sum"), "Sum");
    assert_eq!(pascal_case("get_user"), "GetUser");
    assert_eq!(pascal_case("r#type"), "Type");
    assert_eq!(pascal_case("http2_ping"), "Http2Ping");
    assert_eq!(pascal_case("already_Pascal"), "AlreadyPascal");
}

#[test]
fn the_client_and_service_use_the_wire_names() {
    let out = expanded(
        quote!(),
        quote! {
            pub trait Arith {
                fn get_user(&self, id: u64) -> Result<String, String>;
                #[geerpc(name = "Plus")]
                fn add(&self, a: (i64, i64)) -> Result<i64, String>;
            }
        },
    );
    assert!(out.contains("\"Arith.GetUser\""), "{out}");
    assert!(out.contains("\"Arith.Plus\""), "{out}");
    assert!(out.contains("method_with_context (\"GetUser\""), "{out}");
    assert!(!out.contains("Arith.Add"), "{out}");
    // The macro's own attribute is gone from the trait it emits.
    assert!(!out.contains("geerpc (name"), "{out}");
    let renamed = expanded(
        quote!(name = "Calculator"),
        quote! { trait Arith { fn sum(&self, a: i64) -> Result<i64, String>; } },
    );
    assert!(renamed.contains("\"Calculator.Sum\""), "{renamed}");
    assert!(
        renamed.contains("Service :: new (\"Calculator\")"),
        "{renamed}"
    );
}

#[test]
fn doc_comments_carry_over_to_the_client() {
    let out = expanded(
        quote!(),
        quote! {
            pub trait Arith {
                /// Adds the two numbers.
                fn sum(&self, args: (i64, i64)) -> Result<i64, String>;
            }
        },
    );
    // Once on the trait, once on the client's blocking method.
    assert_eq!(out.matches("Adds the two numbers.").count(), 2, "{out}");
}

#[test]
fn a_renamed_crate_is_used_throughout() {
    let out = expanded(
        quote!(crate = "::my_rpc"),
        quote! { trait Arith { fn sum(&self, a: i64) -> Result<i64, String>; } },
    );
    assert!(out.contains(":: my_rpc :: client :: Caller"), "{out}");
    assert!(!out.contains(":: geerpc ::"), "{out}");
}

#[test]
fn an_error_still_emits_the_trait() {
    let out = expanded(
        quote!(),
        quote! { pub trait Arith { fn sum(a: i64) -> Result<i64, String>; } },
    );
    assert!(out.contains("compile_error"), "{out}");
    assert!(out.contains("pub trait Arith"), "{out}");
    assert!(!out.contains("ArithClient"), "{out}");
}
