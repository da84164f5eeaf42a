"""The Faust application and its plumbing: settings, app factory, topics, tables,
metrics, web views, the embedded dev broker and the command line."""
