"""Users and keys as operators change them: the field rules, the service the CLI and the admin API
share, import and export (``transfer``), and the JSON documents they answer with."""
