//! Validation: the rules a parsed [`Service`] must follow to be expanded.
//!
//! Each broken rule is an error at the offending span with a sentence saying what to write.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, ReturnType, Type};

use crate::ast::{Errors, Method, Output, Service};

/// Method names the generated client already uses.
const RESERVED: &[&str] = &["new", "with_timeout", "with_options"];

pub(crate) fn check(service: &Service, errors: &mut Errors) {
    if service.name.is_empty() || service.name.len() > 255 {
        errors.push(
            service.name_span,
            "the service name must be 1 to 255 bytes long: it is the name of an AMQP queue",
        );
    }
    if !service.generics.params.is_empty() {
        errors.push_tokens(
            &service.generics,
            "a service trait cannot be generic: every server and client must agree on the types; \
             use concrete types in its methods",
        );
    }
    if let Some(where_clause) = &service.generics.where_clause {
        errors.push(
            where_clause.span(),
            "a service trait cannot have a where clause; remove it",
        );
    }
    if let Some(unsafety) = service.unsafety {
        errors.push(
            unsafety.span,
            "a service trait cannot be `unsafe`; remove `unsafe`",
        );
    }
    for method in &service.methods {
        check_method(method, errors);
    }
}

fn check_method(method: &Method, errors: &mut Errors) {
    let sig = &method.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            format!(
                "service methods are async: write `async fn {}(&self, ...)`",
                method.ident
            ),
        );
    }
    if let Some(constness) = sig.constness {
        errors.push(
            constness.span,
            "service methods cannot be `const`; remove `const`",
        );
    }
    if let Some(unsafety) = sig.unsafety {
        errors.push(
            unsafety.span,
            "service methods cannot be `unsafe`; remove `unsafe`",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.push(
            abi.span(),
            "service methods cannot declare an ABI; remove `extern`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic.span(), "service methods cannot be variadic");
    }
    if !sig.generics.params.is_empty() {
        errors.push_tokens(
            &sig.generics,
            "service methods cannot be generic: the wire format needs concrete types; \
             use concrete argument and return types",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(
            where_clause.span(),
            "service methods cannot have a where clause; remove it",
        );
    }
    if let Some(body) = method.default_body {
        errors.push(
            body,
            "service methods have no default body in the trait; end the declaration with `;` \
             and implement it in an `impl` block",
        );
    }
    let name = method.ident.to_string();
    if name.len() > 255 {
        errors.push(
            method.ident.span(),
            "the method name travels as the message `type`, at most 255 bytes; shorten it",
        );
    }
    if RESERVED.contains(&name.as_str()) {
        errors.push(
            method.ident.span(),
            format!("`{name}` is a method of the generated client; rename this method"),
        );
    }
    for arg in &method.args {
        if arg.ident.to_string().starts_with("__warren") {
            errors.push(
                arg.ident.span(),
                "names starting with `__warren` are reserved for generated code; rename this argument",
            );
        }
        if let Some((tokens, problem)) = unsupported_type(&arg.ty) {
            errors.push_tokens(
                tokens,
                format!("{problem} in an argument: {}", problem_help(problem)),
            );
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Some((tokens, problem)) = unsupported_type(ty) {
            errors.push_tokens(
                tokens,
                format!("{problem} in the return type: {}", problem_help(problem)),
            );
        }
    }
    if method.options.oneway.is_some() && !matches!(method.output, Output::Unit) {
        errors.push_tokens(
            &sig.output,
            "a `oneway` method gets no reply, so it returns nothing; remove the return type",
        );
    }
    if let Output::Value(ty) = &method.output {
        if let Type::Path(path) = &**ty {
            if path
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Stream")
            {
                errors.push_tokens(
                    ty,
                    "a streaming method returns `warren_rpc::Stream<T>` with exactly one item \
                     type, e.g. `-> warren_rpc::Stream<u32>`",
                );
            }
        }
    }
}

/// Whether `output` is spelled `Stream` without exactly one item type.
pub(crate) fn is_malformed_stream(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Type::Path(path) = &**ty else {
        return false;
    };
    path.path.segments.last().is_some_and(|s| {
        s.ident == "Stream" && crate::ast::single_type_argument(&s.arguments).is_none()
    })
}

fn problem_help(problem: &str) -> &'static str {
    match problem {
        "a reference" => {
            "values travel over the network, so use an owned type (e.g. `String` instead of \
             `&str`, `Vec<T>` instead of `&[T]`)"
        }
        "`impl Trait`" => "use a concrete type that implements serde's traits",
        "`Self`" => "name the concrete type instead of `Self`",
        _ => "use a concrete type that implements serde's traits",
    }
}

/// The first construct in `ty` that cannot travel over the wire, as its tokens.
fn unsupported_type(ty: &Type) -> Option<(TokenStream, &'static str)> {
    let found = |tokens: &dyn ToTokens, problem| Some((tokens.to_token_stream(), problem));
    match ty {
        Type::Reference(r) => found(r, "a reference"),
        Type::Ptr(p) => found(p, "a raw pointer"),
        Type::ImplTrait(i) => found(i, "`impl Trait`"),
        Type::TraitObject(t) => found(t, "a trait object"),
        Type::BareFn(f) => found(f, "a function pointer"),
        Type::Infer(i) => found(i, "an inferred type `_`"),
        Type::Macro(m) => found(m, "a type macro"),
        Type::Never(n) => found(n, "the never type `!`"),
        Type::Array(a) => unsupported_type(&a.elem),
        Type::Slice(s) => unsupported_type(&s.elem),
        Type::Group(g) => unsupported_type(&g.elem),
        Type::Paren(p) => unsupported_type(&p.elem),
        Type::Tuple(t) => t.elems.iter().find_map(unsupported_type),
        Type::Path(p) => {
            if p.qself.is_some() {
                return found(p, "a qualified path type");
            }
            if p.path.segments.first().is_some_and(|s| s.ident == "Self") {
                return found(p, "`Self`");
            }
            p.path
                .segments
                .iter()
                .find_map(|segment| match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        args.args.iter().find_map(|arg| match arg {
                            GenericArgument::Type(t) => unsupported_type(t),
                            GenericArgument::Lifetime(l) => found(l, "a reference"),
                            _ => None,
                        })
                    }
                    PathArguments::Parenthesized(p) => found(p, "a function trait"),
                    PathArguments::None => None,
                })
        }
        _ => found(ty, "an unsupported type"),
    }
}
