# sample_project/ is another project's suite: test_sample_project.py runs it in a venv of its own.
collect_ignore = ["sample_project"]
