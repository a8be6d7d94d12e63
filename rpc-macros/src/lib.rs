//! The `#[service]` attribute macro of warren-rpc. Use it through `warren_rpc::service`.
//!
//! Three stages, each plain data in and out: [`ast`] parses the trait into a model (collecting
//! every unsupported construct as an error at its span), [`valid`] checks the model's semantics,
//! and [`expand`] emits the trait, the `{Trait}Client` and the `{Trait}Server`. When there are
//! errors, [`expand::fallback`] still emits the trait and the two types so that the user sees the
//! real errors, not a cascade of "cannot find type" ones.

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a trait into a Warren service. See the `warren_rpc` crate documentation.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let input = proc_macro2::TokenStream::from(input);
    let item = match syn::parse2::<syn::ItemTrait>(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new_spanned(
                &input,
                "#[service] applies to a trait: `#[service] pub trait Name { async fn m(&self, a: A) -> R; }`",
            );
            let mut tokens = err.to_compile_error();
            // Keep the item, so that code using it does not fail too.
            tokens.extend(input);
            return tokens.into();
        }
    };
    let mut errors = ast::Errors::default();
    let options = ast::parse_service_args(args, &mut errors);
    let model = ast::Service::parse(&item, options, &mut errors);
    valid::check(&model, &mut errors);
    match errors.into_result() {
        Ok(()) => expand::expand(&model).into(),
        Err(err) => {
            let mut tokens = err.to_compile_error();
            tokens.extend(expand::fallback(&item, &model));
            tokens.into()
        }
    }
}
