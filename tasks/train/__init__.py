"""The training stages on model/trainer.py: pretraining (pretrain.py) and chat SFT (sft.py); reward, PPO, DPO and GRPO build on them."""
