"""The paper's diagnostic tables (1, 2, 6) as sweeps: one pipeline run per ablation row and seed."""
