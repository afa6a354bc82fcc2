"""The three branches of DVLTA-VQA and their building blocks."""
