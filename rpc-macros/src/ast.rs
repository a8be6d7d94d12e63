//! Parsing: the annotated trait -> a [`Service`] model.
//!
//! Constructs the model cannot represent (non-method items, receivers other than `&self`,
//! patterns instead of argument names, unknown attributes) are reported here at their span;
//! semantic rules over a well-formed model live in `valid`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemTrait, Lit, Meta, Pat,
    PathArguments, ReturnType, Signature, Token, TraitItem, TraitItemFn, Type, Visibility,
};

/// Errors collected across all stages, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    /// An error spanning all of `tokens` (first to last token, also on stable Rust).
    pub(crate) fn push_tokens(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.push_error(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn push_error(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    pub(crate) fn into_result(self) -> Result<(), syn::Error> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// The options of `#[service(...)]`.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<(String, Span)>,
}

pub(crate) fn parse_service_args(args: TokenStream, errors: &mut Errors) -> ServiceArgs {
    let mut out = ServiceArgs::default();
    if args.is_empty() {
        return out;
    }
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(err) => {
            errors.push_error(err);
            return out;
        }
    };
    for meta in metas {
        match &meta {
            Meta::NameValue(nv) if nv.path.is_ident("name") => match string_literal(&nv.value) {
                Some(name) if out.name.is_none() => out.name = Some((name, nv.value.span())),
                Some(_) => errors.push_tokens(
                    &meta,
                    "the service name is given twice; keep one `name = \"...\"`",
                ),
                None => errors.push_tokens(
                    &nv.value,
                    "the service name must be a string literal: `#[service(name = \"calculator\")]`",
                ),
            },
            _ => errors.push_tokens(
                &meta,
                "unknown service option; the only option is `name = \"...\"`",
            ),
        }
    }
    out
}

fn string_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

/// The service: the trait and its methods.
pub(crate) struct Service {
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    /// The service (queue) name and the span to blame for it.
    pub(crate) name: String,
    pub(crate) name_span: Span,
    pub(crate) generics: syn::Generics,
    /// The trait's attributes (docs, lints), kept on the emitted trait.
    pub(crate) trait_attrs: Vec<Attribute>,
    /// The trait's own supertraits, kept next to the `Send + Sync + 'static` the macro adds.
    pub(crate) supertraits: Vec<syn::TypeParamBound>,
    pub(crate) unsafety: Option<Token![unsafe]>,
    pub(crate) methods: Vec<Method>,
}

/// One method of the service.
pub(crate) struct Method {
    /// The attributes kept on the trait method (everything but `#[warren(...)]`).
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) sig: Signature,
    pub(crate) ident: Ident,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: Output,
    pub(crate) options: MethodOptions,
    /// The span of a default body, which service traits do not allow.
    pub(crate) default_body: Option<Span>,
}

/// A named argument.
pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// What the method returns, and so what the reply carries.
pub(crate) enum Output {
    /// `()`, written or implied.
    Unit,
    /// A plain value, replied as `{"ok": value}`.
    Value(Box<Type>),
    /// `Result<T, E>`: `{"ok": t}` or `{"err": e}`.
    Result { ok: Box<Type>, err: Box<Type> },
    /// `Stream<T>` (spelled `Stream` with one type parameter): items streamed one by one.
    Stream(Box<Type>),
}

/// `#[warren(...)]` on a method.
#[derive(Default)]
pub(crate) struct MethodOptions {
    pub(crate) idempotent: Option<Span>,
    pub(crate) oneway: Option<Span>,
    pub(crate) timeout_ms: Option<(u64, Span)>,
}

impl Service {
    pub(crate) fn parse(item: &ItemTrait, args: ServiceArgs, errors: &mut Errors) -> Service {
        let (name, name_span) = args
            .name
            .unwrap_or_else(|| (snake_case(&item.ident.to_string()), item.ident.span()));
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => {
                    if let Some(method) = Method::parse(f, errors) {
                        methods.push(method);
                    }
                }
                other => errors.push_tokens(
                    other,
                    "a service trait contains only methods (`async fn name(&self, ...) -> T;`); \
                     move this item out of the trait",
                ),
            }
        }
        Service {
            vis: item.vis.clone(),
            ident: item.ident.clone(),
            name,
            name_span,
            generics: item.generics.clone(),
            trait_attrs: item.attrs.clone(),
            supertraits: item.supertraits.iter().cloned().collect(),
            unsafety: item.unsafety,
            methods,
        }
    }
}

impl Method {
    fn parse(f: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
        let options = parse_method_options(&f.attrs, errors);
        let attrs = f
            .attrs
            .iter()
            .filter(|a| !a.path().is_ident("warren"))
            .cloned()
            .collect();
        let sig = &f.sig;
        let mut inputs = sig.inputs.iter();
        let receiver_ok = match inputs.next() {
            Some(FnArg::Receiver(r)) => {
                if r.colon_token.is_some() {
                    errors.push_tokens(
                        r,
                        "service methods take `&self`; write `&self` instead of a typed `self`",
                    );
                    false
                } else if r.reference.is_none() {
                    errors.push_tokens(
                        r,
                        "service methods take `&self`, not `self` by value: the server calls \
                         one value for every request; write `&self`",
                    );
                    false
                } else if r.mutability.is_some() {
                    errors.push_tokens(
                        r,
                        "service methods take `&self`, not `&mut self`: requests run \
                         concurrently; keep state behind a Mutex or an atomic and write `&self`",
                    );
                    false
                } else {
                    true
                }
            }
            Some(FnArg::Typed(first)) => {
                errors.push_tokens(
                    first,
                    "service methods take `&self` as their first parameter; add `&self, ` before this one",
                );
                // Keep checking the arguments, this one included.
                inputs = sig.inputs.iter();
                false
            }
            None => {
                errors.push(
                    sig.paren_token.span.join(),
                    "service methods take `&self` as their first parameter; write `(&self)`",
                );
                false
            }
        };
        let mut args = Vec::new();
        for input in inputs {
            let FnArg::Typed(typed) = input else {
                continue;
            };
            match &*typed.pat {
                Pat::Ident(pat)
                    if pat.by_ref.is_none() && pat.mutability.is_none() && pat.subpat.is_none() =>
                {
                    args.push(Arg {
                        ident: pat.ident.clone(),
                        ty: (*typed.ty).clone(),
                    });
                }
                Pat::Ident(pat) if pat.mutability.is_some() || pat.by_ref.is_some() => errors
                    .push_tokens(
                    &typed.pat,
                    "write the argument as a plain name (`name: Type`); `mut` and `ref` belong \
                     in the impl, not in the service trait",
                ),
                Pat::Wild(_) => errors.push_tokens(
                    &typed.pat,
                    "give this argument a name (`name: Type`): the name is its key in the \
                     request's arguments map",
                ),
                _ => errors.push_tokens(
                    &typed.pat,
                    "write the argument as a plain name (`name: Type`), not a pattern: the name \
                     is its key in the request's arguments map",
                ),
            }
        }
        let output = parse_output(&sig.output);
        receiver_ok.then(|| Method {
            attrs,
            sig: sig.clone(),
            ident: sig.ident.clone(),
            args,
            output,
            options,
            default_body: f.default.as_ref().map(|b| b.span()),
        })
    }
}

fn parse_output(output: &ReturnType) -> Output {
    let ty = match output {
        ReturnType::Default => return Output::Unit,
        ReturnType::Type(_, ty) => &**ty,
    };
    if let Type::Tuple(tuple) = ty {
        if tuple.elems.is_empty() {
            return Output::Unit;
        }
    }
    if let Type::Path(path) = ty {
        if path.qself.is_none() {
            if let Some(last) = path.path.segments.last() {
                if last.ident == "Stream" {
                    if let Some(item) = single_type_argument(&last.arguments) {
                        return Output::Stream(Box::new(item.clone()));
                    }
                }
                if last.ident == "Result" {
                    if let PathArguments::AngleBracketed(generics) = &last.arguments {
                        let types: Vec<&Type> = generics
                            .args
                            .iter()
                            .filter_map(|a| match a {
                                GenericArgument::Type(t) => Some(t),
                                _ => None,
                            })
                            .collect();
                        if types.len() == 2 && generics.args.len() == 2 {
                            return Output::Result {
                                ok: Box::new(types[0].clone()),
                                err: Box::new(types[1].clone()),
                            };
                        }
                    }
                }
            }
        }
    }
    Output::Value(Box::new(ty.clone()))
}

/// The `T` of `Name<T>`, when that is the only generic argument.
pub(crate) fn single_type_argument(arguments: &PathArguments) -> Option<&Type> {
    match arguments {
        PathArguments::AngleBracketed(generics) if generics.args.len() == 1 => {
            match generics.args.first() {
                Some(GenericArgument::Type(t)) => Some(t),
                _ => None,
            }
        }
        _ => None,
    }
}

const METHOD_OPTIONS_HELP: &str =
    "expected `idempotent`, `oneway` or `timeout_ms = <milliseconds>`";

fn parse_method_options(attrs: &[Attribute], errors: &mut Errors) -> MethodOptions {
    let mut options = MethodOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("warren")) {
        let metas = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
            Ok(metas) => metas,
            Err(err) => {
                errors.push(
                    err.span(),
                    format!("malformed #[warren(...)]: {METHOD_OPTIONS_HELP}"),
                );
                continue;
            }
        };
        for meta in metas {
            let span = meta.span();
            match &meta {
                Meta::Path(p) if p.is_ident("idempotent") => {
                    if options.idempotent.replace(span).is_some() {
                        errors.push(span, "`idempotent` is given twice; keep one");
                    }
                }
                Meta::Path(p) if p.is_ident("oneway") => {
                    if options.oneway.replace(span).is_some() {
                        errors.push(span, "`oneway` is given twice; keep one");
                    }
                }
                Meta::NameValue(nv) if nv.path.is_ident("timeout_ms") => {
                    let millis = match &nv.value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Int(int), ..
                        }) => int.base10_parse::<u64>().ok(),
                        _ => None,
                    };
                    match millis {
                        Some(0) => errors.push(
                            nv.value.span(),
                            "`timeout_ms` must be at least 1: a call with no budget is never sent",
                        ),
                        Some(ms) => {
                            if options.timeout_ms.replace((ms, span)).is_some() {
                                errors.push(span, "`timeout_ms` is given twice; keep one");
                            }
                        }
                        None => errors.push_tokens(
                            &nv.value,
                            "`timeout_ms` takes a whole number of milliseconds: `timeout_ms = 500`",
                        ),
                    }
                }
                _ => errors.push(
                    span,
                    format!("unknown warren option; {METHOD_OPTIONS_HELP}"),
                ),
            }
        }
    }
    options
}

/// `Calculator` -> `calculator`, `HttpGateway` -> `http_gateway`, `HTTPServer` -> `http_server`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Calculator"), "calculator");
        assert_eq!(snake_case("HttpGateway"), "http_gateway");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("Api2Go"), "api2_go");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }
}
