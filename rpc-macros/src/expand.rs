//! Code generation: a validated [`Service`] -> the trait, `{Trait}Client` and `{Trait}Server`.
//!
//! The output only calls the documented runtime API of `warren_rpc` (`Client::call`,
//! `Client::call_fallible`, `Client::notify`, `Dispatch`, `Request::args`) through absolute
//! paths, so it works whatever the user imported, even under `#![no_implicit_prelude]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Attribute, FnArg, Ident, ItemTrait, LitStr, Pat, TraitItem};

use crate::ast::{Method, Output, Service};

/// The visibility of the generated types' methods and constants: `pub` for a public service,
/// `pub(crate)` otherwise, so a crate that denies `unreachable_pub` accepts the expansion and
/// the rest of the crate can still call them.
fn member_vis(service: &Service) -> TokenStream {
    match &service.vis {
        syn::Visibility::Public(_) => quote!(pub),
        _ => quote!(pub(crate)),
    }
}

pub(crate) fn expand(service: &Service) -> TokenStream {
    let trait_def = expand_trait(service);
    let client = expand_client(service);
    let server = expand_server(service);
    quote! {
        #trait_def
        #client
        #server
    }
}

fn client_ident(service: &Service) -> Ident {
    format_ident!("{}Client", service.ident)
}

fn server_ident(service: &Service) -> Ident {
    format_ident!("{}Server", service.ident)
}

fn doc_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc")).collect()
}

/// `name: Type` for each argument of `m`.
fn typed_args(m: &Method) -> impl Iterator<Item = TokenStream> + '_ {
    m.args.iter().map(|a| {
        let (arg, ty) = (&a.ident, &a.ty);
        quote!(#arg: #ty)
    })
}

fn return_type(output: &Output) -> TokenStream {
    match output {
        Output::Unit => quote!(()),
        Output::Value(ty) => quote!(#ty),
        Output::Result { ok, err, .. } => {
            quote!(::core::result::Result<#ok, #err>)
        }
        Output::Stream(item) => quote!(::warren_rpc::Stream<#item>),
    }
}

/// The trait, with each `async fn` turned into `fn -> impl Future + Send` so the server can run
/// handlers on any thread; implementations still write `async fn`.
fn expand_trait(service: &Service) -> TokenStream {
    let vis = &service.vis;
    let ident = &service.ident;
    let item_attrs = &service.trait_attrs;
    let supertraits = &service.supertraits;
    let methods = service.methods.iter().map(|m| {
        let attrs = &m.attrs;
        let name = &m.ident;
        let args = typed_args(m);
        let ret = return_type(&m.output);
        quote! {
            #(#attrs)*
            fn #name(&self, #(#args),*)
                -> impl ::core::future::Future<Output = #ret> + ::core::marker::Send;
        }
    });
    quote! {
        #(#item_attrs)*
        #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static #(+ #supertraits)* {
            #(#methods)*
        }
    }
}

fn method_spec(service: &Service, method: &Method) -> TokenStream {
    let service_name = LitStr::new(&service.name, Span::call_site());
    let method_name = LitStr::new(&method.ident.unraw().to_string(), method.ident.span());
    let idempotent = method.options.idempotent.is_some();
    let oneway = method.options.oneway.is_some();
    let streaming = matches!(method.output, Output::Stream(_));
    let timeout = method
        .options
        .timeout_ms
        .map(|(ms, _)| quote!(.timeout_ms(#ms)));
    let params = method.args.iter().map(|a| {
        let name = LitStr::new(&a.ident.unraw().to_string(), a.ident.span());
        let ty = LitStr::new(&type_name(&a.ty), Span::call_site());
        quote!(::warren_rpc::Param { name: #name, ty: #ty })
    });
    let (returns, error) = match &method.output {
        Output::Unit => ("()".to_owned(), None),
        Output::Value(ty) => (type_name(ty), None),
        Output::Result { ok, err } => (type_name(ok), Some(type_name(err))),
        Output::Stream(item) => (format!("Stream<{}>", type_name(item)), None),
    };
    let error = error.map(|e| quote!(.error(#e)));
    let doc = LitStr::new(&doc_text(&method.attrs), Span::call_site());
    quote! {
        ::warren_rpc::MethodSpec::new(#service_name, #method_name)
            .idempotent(#idempotent)
            .oneway(#oneway)
            .streaming(#streaming)
            #timeout
            .params(&[#(#params),*])
            .returns(#returns)
            #error
            .doc(#doc)
    }
}

/// A type as a person writes it: `Vec<i64>`, `Option<String>`, `(u8, u8)`, `std::string::String`.
pub(crate) fn type_name(ty: &syn::Type) -> String {
    let spaced = quote!(#ty).to_string();
    let mut out = String::with_capacity(spaced.len());
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
    let mut pieces = spaced.split_whitespace().peekable();
    while let Some(piece) = pieces.next() {
        out.push_str(piece);
        if let Some(next) = pieces.peek() {
            let (last, first) = (piece.chars().last(), next.chars().next());
            let keep = matches!((last, first), (Some(l), Some(f)) if word(l) && word(f))
                || piece.ends_with(',')
                || piece == "dyn"
                || piece == "impl"
                || piece.ends_with("mut");
            if keep {
                out.push(' ');
            }
        }
    }
    out
}

/// The text of `#[doc = "..."]` attributes, one line each, without the space after `///`.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The body of `Service::schemas`: a call of `warren_rpc::__schemas!`, which is `None` unless
/// warren-rpc was built with its `schemars` feature.
fn schemas_body(service: &Service) -> TokenStream {
    let methods = service.methods.iter().map(|m| {
        let name = LitStr::new(&m.ident.unraw().to_string(), m.ident.span());
        let params = m.args.iter().map(|a| {
            let pname = LitStr::new(&a.ident.unraw().to_string(), a.ident.span());
            let ty = &a.ty;
            quote!(#pname: #ty)
        });
        let (result, error) = match &m.output {
            Output::Unit => (quote!(()), None),
            Output::Value(ty) => (quote!(#ty), None),
            Output::Result { ok, err } => (quote!(#ok), Some(quote!(#err))),
            // The schema of one item of the stream.
            Output::Stream(item) => (quote!(#item), None),
        };
        quote!(#name { params: [#(#params),*], result: #result, error: [#error] })
    });
    quote!(::warren_rpc::__schemas!(#(#methods)*))
}

fn expand_client(service: &Service) -> TokenStream {
    let member = member_vis(service);
    let vis = &service.vis;
    let trait_ident = &service.ident;
    let client = client_ident(service);
    let service_name = LitStr::new(&service.name, Span::call_site());
    let specs = service.methods.iter().map(|m| method_spec(service, m));
    let doc = format!(
        "Typed client of the `{}` service (generated by `#[warren_rpc::service]` from [`{}`]).",
        service.name, trait_ident
    );
    let methods = service.methods.iter().enumerate().map(|(index, m)| {
        let name = &m.ident;
        let docs = doc_attrs(&m.attrs);
        let default_doc = if docs.is_empty() {
            let text = format!("Calls `{}` on the service.", m.ident.unraw());
            Some(quote!(#[doc = #text]))
        } else {
            None
        };
        let params = typed_args(m);
        let fields = typed_args(m);
        let names: Vec<&Ident> = m.args.iter().map(|a| &a.ident).collect();
        let span = m.ident.span();
        if let Output::Stream(item) = &m.output {
            // Not async: the stream sends its call when first polled.
            return quote_spanned! {span=>
                #(#docs)*
                #default_doc
                #member fn #name(&self, #(#params),*) -> ::warren_rpc::ReplyStream<#item> {
                    #[derive(::warren_rpc::__private::serde::Serialize)]
                    #[serde(crate = "::warren_rpc::__private::serde")]
                    struct __WarrenArgs {
                        #(#fields,)*
                    }
                    self.client
                        .stream(&Self::METHODS[#index], &__WarrenArgs { #(#names),* }, &self.options)
                }
            };
        }
        // Validation made every one-way method return `()`.
        let ret = return_type(&m.output);
        let call = match &m.output {
            _ if m.options.oneway.is_some() => quote!(notify),
            Output::Result { .. } => quote!(call_fallible),
            Output::Unit | Output::Value(_) | Output::Stream(_) => quote!(call),
        };
        quote_spanned! {span=>
            #(#docs)*
            #default_doc
            #member async fn #name(&self, #(#params),*)
                -> ::core::result::Result<#ret, ::warren_rpc::Error>
            {
                #[derive(::warren_rpc::__private::serde::Serialize)]
                #[serde(crate = "::warren_rpc::__private::serde")]
                struct __WarrenArgs {
                    #(#fields,)*
                }
                self.client
                    .#call(&Self::METHODS[#index], &__WarrenArgs { #(#names),* }, &self.options)
                    .await
            }
        }
    });
    let broadcast = format_ident!("{}Broadcast", service.ident);
    let broadcast_doc = format!(
        "Calls every replica of the `{}` service at once (generated by \
         `#[warren_rpc::service]`; from `{}::broadcast`).",
        service.name, client
    );
    let broadcast_methods = service.methods.iter().enumerate().filter_map(|(index, m)| {
        if m.options.oneway.is_some() || matches!(m.output, Output::Stream(_)) {
            return None;
        }
        let name = &m.ident;
        let text = format!(
            "Calls `{}` on every replica; one [`Replica`](::warren_rpc::Replica) per reply.",
            m.ident.unraw()
        );
        let params = typed_args(m);
        let fields = typed_args(m);
        let names: Vec<&Ident> = m.args.iter().map(|a| &a.ident).collect();
        let (call, item) = match &m.output {
            Output::Result { ok, err } => (
                quote!(broadcast_fallible::<_, #ok, #err>),
                quote!(::core::result::Result<#ok, #err>),
            ),
            other => {
                let ret = return_type(other);
                (quote!(broadcast_call::<_, #ret>), ret)
            }
        };
        let span = m.ident.span();
        Some(quote_spanned! {span=>
            #[doc = #text]
            #member async fn #name(&self, #(#params),*) -> ::core::result::Result<
                ::std::vec::Vec<::warren_rpc::Replica<#item>>,
                ::warren_rpc::Error,
            > {
                #[derive(::warren_rpc::__private::serde::Serialize)]
                #[serde(crate = "::warren_rpc::__private::serde")]
                struct __WarrenArgs {
                    #(#fields,)*
                }
                self.client
                    .#call(&#client::METHODS[#index], &__WarrenArgs { #(#names),* }, &self.options)
                    .await
            }
        })
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: ::warren_rpc::Client,
            options: ::warren_rpc::CallOptions,
        }

        impl #client {
            /// The service name: the queue its servers consume.
            #member const SERVICE: &'static str = #service_name;

            /// The methods of the service, in declaration order.
            #member const METHODS: &'static [::warren_rpc::MethodSpec] = &[#(#specs),*];

            /// A client of the service over `client`'s connection.
            #member fn new(client: ::warren_rpc::Client) -> Self {
                Self {
                    client,
                    options: ::warren_rpc::CallOptions::new(),
                }
            }

            /// The same client with another budget for each call.
            #member fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(&self.client),
                    options: ::core::clone::Clone::clone(&self.options).timeout(timeout),
                }
            }

            /// The same client with other call options (timeout, service name, codec).
            #member fn with_options(&self, options: ::warren_rpc::CallOptions) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(&self.client),
                    options,
                }
            }

            /// Calls every replica of the service at once and collects their replies (until
            /// the call's deadline, or [`max_replies`](::warren_rpc::BroadcastOptions::max_replies)
            /// of them); see `Client::broadcast_call`. One-way and streaming methods are not
            /// offered.
            #member fn broadcast(&self) -> #broadcast {
                #broadcast {
                    client: ::core::clone::Clone::clone(&self.client),
                    options: ::core::convert::From::from(&self.options),
                }
            }

            #(#methods)*
        }

        #[doc = #broadcast_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #broadcast {
            client: ::warren_rpc::Client,
            options: ::warren_rpc::BroadcastOptions,
        }

        impl #broadcast {
            /// The same broadcast, collecting replies for at most `timeout`.
            #member fn timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(&self.client),
                    options: ::core::clone::Clone::clone(&self.options).timeout(timeout),
                }
            }

            /// The same broadcast, returning as soon as `n` replicas replied.
            #member fn max_replies(&self, n: usize) -> Self {
                Self {
                    client: ::core::clone::Clone::clone(&self.client),
                    options: ::core::clone::Clone::clone(&self.options).max_replies(n),
                }
            }

            #(#broadcast_methods)*
        }
    }
}

fn expand_server(service: &Service) -> TokenStream {
    let member = member_vis(service);
    let vis = &service.vis;
    let trait_ident = &service.ident;
    let client = client_ident(service);
    let server = server_ident(service);
    let service_name = LitStr::new(&service.name, Span::call_site());
    let schemas = schemas_body(service);
    let doc = format!(
        "Serves any implementation of [`{}`] (generated by `#[warren_rpc::service]`); hand it \
         to a `warren_rpc::Server`.",
        trait_ident
    );
    let arms = service.methods.iter().map(|m| {
        let name = &m.ident;
        let wire_name = LitStr::new(&m.ident.unraw().to_string(), m.ident.span());
        let fields = typed_args(m);
        let names: Vec<&Ident> = m.args.iter().map(|a| &a.ident).collect();
        let run = match &m.output {
            Output::Result { .. } => quote!(::warren_rpc::Dispatch::result),
            Output::Stream(_) => quote!(::warren_rpc::Dispatch::stream),
            Output::Unit | Output::Value(_) => quote!(::warren_rpc::Dispatch::value),
        };
        quote! {
            #wire_name => {
                #[derive(::warren_rpc::__private::serde::Deserialize)]
                #[serde(crate = "::warren_rpc::__private::serde")]
                struct __WarrenArgs {
                    #(#fields,)*
                }
                let __WarrenArgs { #(#names),* } = match __warren_request.args::<__WarrenArgs>() {
                    ::core::result::Result::Ok(args) => args,
                    ::core::result::Result::Err(fault) => {
                        return ::warren_rpc::Dispatch::fault(fault);
                    }
                };
                let __warren_service = ::core::clone::Clone::clone(&self.service);
                #run(__warren_codec, async move {
                    __warren_service.#name(#(#names),*).await
                })
            }
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            service: ::warren_rpc::__private::Arc<S>,
        }

        impl<S: #trait_ident> #server<S> {
            /// Wraps an implementation of the service.
            #member fn new(service: S) -> Self {
                Self {
                    service: ::warren_rpc::__private::Arc::new(service),
                }
            }

            /// Wraps an implementation shared with other code.
            #member fn from_arc(service: ::warren_rpc::__private::Arc<S>) -> Self {
                Self { service }
            }
        }

        impl<S> ::core::clone::Clone for #server<S> {
            fn clone(&self) -> Self {
                Self {
                    service: ::core::clone::Clone::clone(&self.service),
                }
            }
        }

        impl<S> ::core::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(::core::concat!(::core::stringify!(#server), "(", #service_name, ")"))
            }
        }

        impl<S: #trait_ident> ::warren_rpc::Service for #server<S> {
            fn name(&self) -> &'static str {
                #service_name
            }

            fn methods(&self) -> &'static [::warren_rpc::MethodSpec] {
                #client::METHODS
            }

            fn schemas(&self) -> ::core::option::Option<::warren_rpc::__private::serde_json::Value> {
                #schemas
            }

            fn dispatch(&self, __warren_request: ::warren_rpc::Request) -> ::warren_rpc::Dispatch {
                let __warren_codec = __warren_request.codec();
                match __warren_request.method() {
                    #(#arms)*
                    _ => ::warren_rpc::Dispatch::unknown_method(#service_name, &__warren_request),
                }
            }
        }
    }
}

/// What to emit next to the errors: the trait as written (minus `#[warren]` attributes) and
/// the client and server types with their constructors, so code using them does not pile up
/// secondary errors.
pub(crate) fn fallback(item: &ItemTrait, service: &Service) -> TokenStream {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("warren"));
            // A `Stream` without exactly one item type is reported once, by us.
            if crate::valid::is_malformed_stream(&f.sig.output) {
                f.sig.output = syn::ReturnType::Default;
            }
            // Patterns are not allowed in a declaration without a body: name them, so the only
            // error the user sees about them is ours.
            for (index, input) in f.sig.inputs.iter_mut().enumerate() {
                if let FnArg::Typed(typed) = input {
                    if !matches!(&*typed.pat, Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none())
                    {
                        let name = format_ident!("__warren_arg{}", index);
                        *typed.pat = syn::parse_quote!(#name);
                    }
                }
            }
        }
    }
    let vis = &service.vis;
    let member = member_vis(service);
    let client = client_ident(service);
    let server = server_ident(service);
    quote! {
        #item

        #[allow(dead_code, missing_docs)]
        #vis struct #client;

        #[allow(dead_code, missing_docs)]
        impl #client {
            #member fn new(_client: ::warren_rpc::Client) -> Self {
                #client
            }
        }

        #[allow(dead_code, missing_docs)]
        #vis struct #server<S>(::core::marker::PhantomData<S>);

        #[allow(dead_code, missing_docs)]
        impl<S> #server<S> {
            #member fn new(_service: S) -> Self {
                #server(::core::marker::PhantomData)
            }
        }
    }
}
