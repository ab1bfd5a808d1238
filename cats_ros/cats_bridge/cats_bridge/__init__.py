"""ROS 2 bridge node between a robot and the CATS swarm gateway."""
