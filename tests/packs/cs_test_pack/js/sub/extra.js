export const csTestExtra = true;
