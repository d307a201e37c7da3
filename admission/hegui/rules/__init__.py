"""hegui's rule engine: one piece of code per rule, shared by the admission webhook, the
operator's background audit and `hegui check`."""
