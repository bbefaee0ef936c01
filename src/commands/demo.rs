pub(super) async fn demo(
    _u: Option<String>,
    _a: crate::cli::DemoArgs,
) -> Result<(), super::CommandError> {
    todo!()
}
