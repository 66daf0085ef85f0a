//! `#[geerpc::service]`: from one trait, a typed client (`ArithClient`)
//! over anything that can call (`geerpc::client::Caller`: a `Client`, an
//! `XClient`, references and `Arc`s of them) and a server adapter
//! (`ArithService`) that turns an implementation into a `geerpc::Service`.
//!
//! Use it through the `geerpc` crate (`geerpc::service`, feature `macros`);
//! the documentation, with an example, is there. The generated code
//! expands in the user's crate, so it names only public items of geerpc
//! (through `::geerpc`, or the path `crate = "..."` gives).
//!
//! - `model`: reading and checking the trait (every misuse a compile error
//!   on the user's tokens);
//! - `client`: the generated client;
//! - `server`: the generated server adapter.

mod client;
mod model;
mod server;

use proc_macro::TokenStream;
use quote::quote;
use syn::ItemTrait;

/// Generates a typed client and a server adapter from a service trait.
/// See `geerpc::service` for the documentation.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into()).into()
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut tr: ItemTrait = match syn::parse2(item) {
        Ok(t) => t,
        Err(e) => {
            return syn::Error::new(
                e.span(),
                "`#[geerpc::service]` goes on a trait (`pub trait Arith { ... }`)",
            )
            .to_compile_error();
        }
    };
    let opts = model::Options::parse(attr);
    let methods = model::read_trait(&mut tr);
    // On any error the trait is still emitted (without the macro's own
    // attributes), so that the user sees the one error, not a cascade of
    // "cannot find trait" from every `impl` of it.
    let (opts, methods) = match (opts, methods) {
        (Ok(o), Ok(m)) => (o, m),
        (o, m) => {
            let errors = [o.err(), m.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_compile_error());
            return quote! { #tr #(#errors)* };
        }
    };
    let name = match model::service_name(&opts, &tr) {
        Ok(n) => n,
        Err(e) => {
            let e = e.to_compile_error();
            return quote! { #tr #e };
        }
    };
    let krate = match &opts.krate {
        Some(p) => quote!(#p),
        None => quote!(::geerpc),
    };
    let client = client::generate(&tr, &name, &methods, &krate);
    let server = server::generate(&tr, &name, &methods, &krate);
    quote! {
        #tr
        #client
        #server
    }
}

#[cfg(test)]
mod tests;
