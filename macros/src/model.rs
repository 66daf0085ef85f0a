//! What `#[geerpc::service]` reads from a trait: the service's options and,
//! per method, its wire name, argument, reply and whether it takes the
//! call's `Context`. Every shape it cannot serve is a `syn::Error` spanned
//! on the user's own tokens, so that rustc points at their code.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Path, PathArguments, ReturnType,
    TraitItem, TraitItemFn, Type,
};

/// `#[geerpc::service(name = "...", crate = "...")]`.
pub struct Options {
    /// The service's wire name; default: the trait's name.
    pub name: Option<LitStr>,
    /// Where geerpc is (for a crate that renamed it); default `::geerpc`.
    pub krate: Option<Path>,
}

impl Options {
    pub fn parse(attr: proc_macro2::TokenStream) -> syn::Result<Options> {
        let mut opts = Options {
            name: None,
            krate: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                opts.name = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                opts.krate = Some(lit.parse()?);
                Ok(())
            } else {
                Err(meta.error("unknown option: `#[geerpc::service]` takes `name = \"...\"` and `crate = \"...\"`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(opts)
    }
}

/// One method of the service.
pub struct Method {
    /// The Rust name (the trait's and the client's method).
    pub ident: Ident,
    /// `Sum` for `sum`, or what `#[geerpc(name = "...")]` says.
    pub wire: String,
    /// Whether the method takes `&Context` before its argument.
    pub context: bool,
    /// The argument's type (received by value).
    pub arg: Type,
    /// `T` of the returned `Result<T, E>`.
    pub reply: Type,
    /// The return type as written (its span is where reply errors point).
    pub ret: Type,
    /// The method's doc comments, for the client's methods.
    pub docs: Vec<Attribute>,
}

/// `sum` -> `Sum`, `get_user` -> `GetUser`: Go's exported method names.
pub fn pascal_case(rust: &str) -> String {
    let rust = rust.strip_prefix("r#").unwrap_or(rust);
    let mut out = String::with_capacity(rust.len());
    let mut upper = true;
    for c in rust.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A wire name as the server accepts one (Service::new's check).
fn check_wire(name: &str, span: Span, what: &str) -> syn::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(syn::Error::new(
            span,
            format!("invalid {what} name `{name}`: letters, digits and `_` only (no `.`)"),
        ));
    }
    Ok(())
}

/// Takes `#[geerpc(name = "...")]` off a method: the wire name it gives.
fn take_method_name(attrs: &mut Vec<Attribute>) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    let mut err = None;
    attrs.retain(|a| {
        if !a.path().is_ident("geerpc") {
            return true;
        }
        let r = a.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else {
                Err(meta.error("unknown option: a method takes `#[geerpc(name = \"...\")]`"))
            }
        });
        if let Err(e) = r {
            err.get_or_insert(e);
        }
        false
    });
    match err {
        Some(e) => Err(e),
        None => Ok(name),
    }
}

/// Whether `ty` is `&Context` (any path ending in `Context`).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else {
        return false;
    };
    matches!(&*r.elem, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

/// `T` of `Result<T>` or `Result<T, E>` (any path ending in `Result`).
fn ok_type(ret: &ReturnType, sig_span: Span) -> syn::Result<(Type, Type)> {
    const WHAT: &str = "a service method returns `Result<Reply, E>` (E: Display), \
                        e.g. `-> Result<i64, String>`";
    let ReturnType::Type(_, ty) = ret else {
        return Err(syn::Error::new(sig_span, WHAT));
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(GenericArgument::Type(t)) = args.args.first() {
                        if let Type::Reference(r) = t {
                            return Err(syn::Error::new_spanned(
                                r,
                                "the reply is sent by value: return an owned type \
                                 (e.g. `String`, not `&str`)",
                            ));
                        }
                        return Ok((t.clone(), (**ty).clone()));
                    }
                }
            }
        }
    }
    Err(syn::Error::new_spanned(ty, WHAT))
}

impl Method {
    /// Reads one trait method, taking its `#[geerpc(...)]` off it.
    fn read(f: &mut TraitItemFn) -> syn::Result<Method> {
        let wire_attr = take_method_name(&mut f.attrs)?;
        let sig = &f.sig;
        if let Some(a) = &sig.asyncness {
            return Err(syn::Error::new(
                a.span(),
                "`async fn` is not supported: geerpc is synchronous (no async runtime); \
                 write a blocking `fn`, which runs on a server worker thread",
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(syn::Error::new_spanned(
                &sig.generics,
                "a service method cannot be generic: its argument and reply are \
                 concrete types that travel on the wire",
            ));
        }
        if let Some(c) = &sig.constness {
            return Err(syn::Error::new(
                c.span(),
                "a service method cannot be `const`",
            ));
        }
        if let Some(u) = &sig.unsafety {
            return Err(syn::Error::new(
                u.span(),
                "a service method cannot be `unsafe`",
            ));
        }
        if let Some(a) = &sig.abi {
            return Err(syn::Error::new(
                a.span(),
                "a service method cannot have an `extern` ABI",
            ));
        }
        if let Some(v) = &sig.variadic {
            return Err(syn::Error::new(
                v.span(),
                "a service method cannot be variadic",
            ));
        }
        const SELF: &str = "a service method takes `&self` first: the server calls it \
                            from many threads at once";
        match sig.inputs.first() {
            Some(FnArg::Receiver(r))
                if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
            Some(FnArg::Receiver(r)) => return Err(syn::Error::new_spanned(r, SELF)),
            _ => return Err(syn::Error::new(sig.ident.span(), SELF)),
        }
        let typed: Vec<_> = sig
            .inputs
            .iter()
            .skip(1)
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(t),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let (context, arg) = match typed.as_slice() {
            [] => {
                return Err(syn::Error::new(
                    sig.paren_token.span.join(),
                    "a service method takes one argument after `&self` \
                     (use `args: ()` for none)",
                ))
            }
            [one] if is_context(&one.ty) => {
                return Err(syn::Error::new_spanned(
                    one,
                    "a service method takes one argument after the `&Context` \
                     (use `args: ()` for none)",
                ))
            }
            [one] => (false, one),
            [ctx, one] if is_context(&ctx.ty) => (true, one),
            // Three or more, the first the context: the third is extra.
            [_, _, extra, ..] if is_context(&typed[0].ty) => {
                return Err(syn::Error::new_spanned(
                    extra,
                    "a service method takes one argument besides the `&Context`: \
                     put several values in one struct or tuple",
                ))
            }
            [_, extra, ..] => {
                return Err(syn::Error::new_spanned(
                    extra,
                    "a service method takes one argument (optionally after a \
                     `&geerpc::Context`): put several values in one struct or tuple",
                ))
            }
        };
        match &*arg.ty {
            Type::Reference(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "the argument is received by value: take an owned type \
                     (e.g. `String`, not `&str`)",
                ))
            }
            Type::ImplTrait(t) => {
                return Err(syn::Error::new_spanned(
                    t,
                    "a service method cannot be generic: take a concrete argument type",
                ))
            }
            _ => {}
        }
        let (reply, ret) = ok_type(&sig.output, sig.ident.span())?;
        let wire = match &wire_attr {
            Some(lit) => {
                check_wire(&lit.value(), lit.span(), "method")?;
                lit.value()
            }
            None => pascal_case(&sig.ident.to_string()),
        };
        Ok(Method {
            ident: sig.ident.clone(),
            wire,
            context,
            arg: (*arg.ty).clone(),
            reply,
            ret,
            docs: f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
        })
    }
}

/// Names the generated client has besides the methods' own.
pub const CLIENT_OWN: &[&str] = &["new", "with", "get_ref", "into_inner", "options"];
/// Prefixes of the generated client's per-method names (`go_sum`, ...).
pub const PREFIXES: &[&str] = &["go_", "broadcast_", "fork_", "inform_"];

/// Reads and checks the whole trait, taking the macro's own attributes
/// off it. Every error found is returned (combined), so that one
/// compile shows them all.
pub fn read_trait(item: &mut ItemTrait) -> syn::Result<Vec<Method>> {
    let mut errors: Vec<syn::Error> = Vec::new();
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &item.generics,
            "a service trait cannot be generic: its methods' types travel on the wire",
        ));
    }
    let mut methods = Vec::new();
    for it in &mut item.items {
        match it {
            TraitItem::Fn(f) => match Method::read(f) {
                Ok(m) => methods.push(m),
                Err(e) => errors.push(e),
            },
            other => errors.push(syn::Error::new_spanned(
                &*other,
                "a service trait holds methods only (no associated types, consts or macros)",
            )),
        }
    }
    // Wire names are unique (the server would refuse the second one at
    // run time; here it is a compile error on the second method).
    let mut wires: HashMap<&str, &Ident> = HashMap::new();
    for m in &methods {
        if let Some(first) = wires.insert(&m.wire, &m.ident) {
            errors.push(syn::Error::new(
                m.ident.span(),
                format!(
                    "duplicate wire name `{}`: `{first}` has it too \
                     (rename one with `#[geerpc(name = \"...\")]`)",
                    m.wire
                ),
            ));
        }
    }
    // The client's method names are unique too.
    let mut names: HashMap<String, &Ident> = HashMap::new();
    for m in &methods {
        let own = m.ident.to_string();
        let own = own.strip_prefix("r#").unwrap_or(&own).to_string();
        let mut mine = vec![own.clone()];
        mine.extend(PREFIXES.iter().map(|p| format!("{p}{own}")));
        for n in mine {
            if CLIENT_OWN.contains(&n.as_str()) {
                errors.push(syn::Error::new(
                    m.ident.span(),
                    format!(
                        "`{n}` is a method of the generated client: rename the Rust method \
                         (the wire name can stay, with `#[geerpc(name = \"...\")]`)"
                    ),
                ));
            } else if let Some(other) = names.insert(n.clone(), &m.ident) {
                errors.push(syn::Error::new(
                    m.ident.span(),
                    format!(
                        "the generated client would have two methods `{n}` \
                         (from `{other}` and `{}`): rename one",
                        m.ident
                    ),
                ));
            }
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok(methods),
    }
}

/// The service's wire name: the option's, else the trait's.
pub fn service_name(opts: &Options, item: &ItemTrait) -> syn::Result<String> {
    match &opts.name {
        Some(lit) => {
            check_wire(&lit.value(), lit.span(), "service")?;
            Ok(lit.value())
        }
        None => Ok(item.ident.to_string()),
    }
}
