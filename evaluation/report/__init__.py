"""The study report: its numbers, charts, the report document and exports."""
