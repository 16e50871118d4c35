"""The training stages: pretraining here; SFT, reward, PPO, DPO and GRPO build on model/trainer.py too."""
