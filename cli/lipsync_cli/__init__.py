"""`lipsync`: the pipeline's command line (submit, watch, fetch and inspect jobs).

One module per concept:
    errors      exit codes and the errors that carry them
    targets     which stack: a deployed one (CloudFormation outputs) or the one-machine stack
    api         the IAM status routes, signed with botocore's SigV4
    submission  pairs and manifests: validated with the layer's own planning code, then uploaded
    render      text and JSON output, and the live watch display
    commands    one function per command
    app         the argument parser and `main`
"""
