"""Built-in base layer definitions, as JSON data. This file only lets the
folder ship inside the installed package as `ocibuild.builtin_layers`."""
