//! The `prov` command: parse arguments, set up logging, run, map the outcome to
//! an exit code (0 success, 1 error, 2 "changes present" with
//! `--detailed-exitcode`, 130 interrupted by Ctrl-C or SIGTERM).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = prov::cli::Cli::parse();
    let style = prov::ui::Style::detect(cli.color);
    prov::ui::init_tracing(style);
    match prov::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            prov::ui::print_error(&error, style);
            let interrupted = error
                .chain()
                .any(|cause| cause.is::<prov::interrupt::Interrupted>());
            ExitCode::from(if interrupted {
                prov::interrupt::EXIT_INTERRUPTED
            } else {
                1
            })
        }
    }
}
