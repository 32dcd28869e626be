"""`lipsync`: the pipeline's command line (submit, watch, fetch, inspect and retry jobs;
report what they cost).

One module per concept:
    errors      exit codes and the errors that carry them
    targets     which stack: a deployed one (CloudFormation outputs) or the one-machine stack
    api         the IAM status routes, signed with botocore's SigV4
    submission  pairs and manifests: validated with the layer's own planning code, then uploaded
    costs       a submission's estimate and the spend report, with the layer's cost rules
    retries     which jobs can be re-run, and the manifest that re-runs one
    render      text and JSON output, and the live watch display
    commands    one function per command
    app         the argument parser and `main`
"""
